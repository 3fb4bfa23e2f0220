"""`broker bench`: how fast the broker is, against raw baselines, in one run (docs/performance.md).

Everything runs on this machine, in a temp folder, with the same message bytes (a signed
`delivery.status` of about 1 KB, NATO RESTRICTED, releasable to all three organisations):

* baselines: Ed25519 verify/s (PyNaCl/libsodium and `cryptography`); raw nats-py JetStream publish
  to a nats-server with the same settings as `broker up` (`sync_interval: always`, file storage,
  `Nats-Msg-Id`), awaited one by one and with `publish_async` in a bounded window; a bare aiohttp
  handler over the same mutual TLS (reads the body, returns 202) in its own process;
* the system (`broker up`'s `System`: embedded NATS, gateway, dispatcher, audit, adapters with stub
  native systems) in its own process: ingest through `POST /v1/messages` and `/v1/messages/batch`,
  open-loop latency at fixed offered rates, POST-to-native delivery latency, fan-out, memory;
* audit verification over a generated export (signed checkpoints every 1000 records).

The load generator is this process; the broker and the baselines' servers run in child processes
started with `python -m broker.bench --serve ...`, so client and server do not share an event loop.
Speed is only reported, never asserted: figures are ratios against baselines measured in the same run.

Modules, each owning one part:

    cli           the `broker bench` subcommand (`add_bench_parser`, `cmd_bench`)
    scenarios     the figures, in the order they are printed (`run`)
    scale         how much a run does (`QUICK`, `FULL`)
    payloads      the bench sender, its state and its signed envelopes
    servers       the child servers (`--serve broker|bare|gateway1|gateway2`) and `child()`
    load          closed-loop and open-loop load generators, batch posts
    baselines     raw Ed25519 verify and raw JetStream publish (nats-py via `broker.nats.raw`)
    audit_export  the generated audit export and its verification rate
    procfs        memory and CPU from /proc
    report        `Figure`, `fig`, `percentile`, the table and the JSON
    metrics_cost  not a figure: the metrics registry against prometheus_client (broker/metrics)
"""
