"""The runtime: prefill and decode, sampling, a conversation's turns, the engine thread and the events it reports."""
