"""Reusable test/demo harness (pytest, `make run` and `make bench` share it).

- realm:      `Realm`, a throwaway MIT KDC in one directory; `standard_realm()`.
- users:      test uids (gpytest1, gpytest2) and running commands as them.
- daemon:     `DaemonProcess`, the C gssproxy or gssproxy-py under test.
- interposer: env vars that route a GSSAPI client through proxymech.so.
- peer:       driving the client programs in tests/integration/clients/.
- net, paths: loopback port helpers and well-known paths.
"""
