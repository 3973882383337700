"""Channels beyond voice, one adapter per channel on the one conversation model
(aicc.appliance.conversations): web chat (webchat.py) with the text bot (textbot.py), which runs the
voice bot's dialogue manager without audio, and WeCom customer service (wecom.py, with wecom_crypto.py,
wecom_api.py and wecom_store.py) with the same bot."""
