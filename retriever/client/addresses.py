"""Where the address-file helpers used to live; they are in ``retriever.addresses`` now (the
core: the server writes the files, the client reads them)."""

from ..addresses import (
    MAX_FILE_BYTES,
    address_file,
    advertised_host,
    check_folder,
    read_addresses,
    write_address,
)

__all__ = [
    "MAX_FILE_BYTES",
    "address_file",
    "advertised_host",
    "check_folder",
    "read_addresses",
    "write_address",
]
