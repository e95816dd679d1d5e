"""Uploaded sample sets and generators, one concern per module:

- ``receive``: the multipart body streamed to a temporary file while hashed, cut off at the size
  limit (streaming-form-data's parser);
- ``sizes``: what a file decodes to, read from its headers and checked against the limits before
  anything is decompressed or decoded;
- ``archives``: archive safety (corrupt members, names escaping their folder, links);
- ``validate``: the file opened as the worker will open it (count, shape, output shape);
- ``store``: the content store (``<data_dir>/uploads/<sha256><suffix>``), files kept while a record
  names them;
- ``records``: the register-and-store flow both upload routes share, and the records' queries.
"""
