"""The daemon: the only layer with sockets, an event loop and signals
(see docs/ARCHITECTURE.md).

* `cli`: the `gssproxy-py` command line (gssproxy's flags) and `main()`.
* `daemon`: `GssProxyServer` (listeners, connections, the configuration in
  force, per-call service matching and deadlines, reload, shutdown) and
  `serve()`, which adds signal handling.
* `connection`: `RpcConnection`, the asyncio protocol of one client
  connection; `flow`: its sans-IO in-flight limit and read pausing.
* `listeners`: binding AF_UNIX sockets and removing their files.
* `peer`: the caller's identity from SO_PEERCRED, /proc and SELinux.
* `programs`: which RPC programs are served and where handlers come from.
* `logs`: gssproxy's debug levels on `logging`; `notify`: sd_notify.

The protocol work itself (record marking, call headers, replies, routing)
is done by the sans-IO functions of `gssproxy_py.rpc`.
"""
