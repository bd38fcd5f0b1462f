"""The bottom layer (DESIGN.md section 1): identity, errors, files, clocks, addresses,
the network seams, the port demux, signed records, the replay core and the interfaces
the layers above implement. Stdlib and crypto libraries only; nothing here imports
another layer of p2pstack or aioquic, pyOpenSSL, aioice or structlog.

Import from the submodules (``stack.base.identity`` ...); this package runs no code.
"""
