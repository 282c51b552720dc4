"""The ONC RPC layer, without I/O (see docs/ARCHITECTURE.md).

`records` turns a byte stream into records and back (record marking),
`messages` reads call headers, builds every reply and routes a record to a
procedure or an RPC error, and `dispatch` is the contract between the server
and the programs it serves (`ProgramService`, `CallInfo`, `Handler`).
Nothing here touches sockets or an event loop; `gssproxy_py.server` does.
"""

from __future__ import annotations
