"""Tendril: RDMA point-to-point communication for LLM systems (Python API)."""
