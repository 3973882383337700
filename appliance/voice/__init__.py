"""Voice gateway (SIP UAS/UAC, SDP, RTP, codecs, DTMF, jitter buffer) and the AI voice bot pipeline."""
