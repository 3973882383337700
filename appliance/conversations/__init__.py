"""Conversations: one model for every channel. A customer (with identities per channel: phone, email,
WeCom external user id, OpenID, app user id, a web-chat visitor) has conversations (channel, status,
who handles it: the bot, a queue or an agent) made of messages. Voice calls stay in aicc.calls and are
joined into a customer's history by phone identity (store.history), so calls are not duplicated."""
