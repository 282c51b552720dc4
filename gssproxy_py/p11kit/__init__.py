"""p11-kit's RPC protocol (what `p11-kit-client.so` speaks), sans-IO.

`wire` frames the byte stream and reads and writes the field types,
`attributes` holds the attribute value-class table both ends must share,
`ck` the PKCS#11 constants used, `model` the virtual token a connection
sees and the backend protocol it calls, `calls` the call table (one row per
call id, with its signatures and handler) and `session` one connection's
PKCS#11 state (sessions, handles, searches, operations) with the handlers;
`fast` answers the hot calls of a signature or decryption without the
generic codec (the p11-kit worker's loop tries it first).
Nothing here touches a socket: `gssproxy_py.server.p11kit` does.
"""
