"""`python -m broker.bench [--quick] [--json FILE] ...` runs the bench (as `broker bench` does);
`python -m broker.bench --serve KIND ...` is a child server of a run (`broker.bench.servers`)."""

from __future__ import annotations

import sys

if "--serve" in sys.argv:
    from broker.bench.servers import serve_main

    sys.exit(serve_main(sys.argv[1:]))
else:
    from broker.bench.cli import main

    sys.exit(main(sys.argv[1:]))
