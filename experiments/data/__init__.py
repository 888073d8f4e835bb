"""Data: raw corpora (``sources``, ``textfiles``, their ``checksums/``), the subword ``tokenizer``, token-budget
``batching``, and the task pipeline that ties them together (``pipeline.TaskData``)."""
