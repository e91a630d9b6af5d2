"""Harnesses that drive a running server from outside, as its users would: the benchmark
(`mmtriton bench`) and the reliability runs (`mmtriton reliability`, `make soak`).

They sit downstream of everything (they use the build's test examples, the client and the
serving core); nothing but their own tests imports them.
"""
