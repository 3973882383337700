"""Channels beyond voice, one adapter per channel on the one conversation model
(aicc.appliance.conversations): web chat (webchat.py) with the text bot (textbot.py), which runs the
voice bot's dialogue manager without audio, WeCom customer service (wecom.py, with wecom_crypto.py,
wecom_api.py and wecom_store.py) and the WeChat official account (wechat_oa.py, wechat_oa_store.py) with
the same bot; what those two share is in tencent_hub.py and tencent_api.py."""
