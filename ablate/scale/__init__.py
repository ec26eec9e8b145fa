"""Scale-out: world-size-independent training randomness and sharded evaluation (``distributed``), FSDP
(``fsdp``). Used by the pipeline; tested on CPU with gloo processes (tests/test_distributed.py)."""
