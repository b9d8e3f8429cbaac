"""``python -m retriever.ray_serve``: the entry point of ``retriever.server.ray_serve``."""

import sys

if __name__ == "__main__":
    from retriever.server.ray_serve import main

    sys.exit(main())
