"""External references (``s3://``, ``http(s)://``, ``file://`` blobs that stay where they are)."""
