"""Channels beyond voice, one adapter per channel on the one conversation model
(aicc.appliance.conversations): web chat (webchat.py) with the text bot (textbot.py), which runs the
voice bot's dialogue manager without audio."""
