"""A tiny HTTP server that adopts its listening socket by the systemd
socket-activation convention (fd 3, LISTEN_FDS=1, LISTEN_PID), as started
by `fdpass fetch SOCKET NAME -- python3 server.py`, `fdpass listen` or
`fdpass adopt`, and says READY=1 once it serves: on $IO_FDPASS_READY_SOCKET
when set (where `fdpass adopt --stop-old` run by systemd waits, and tells
systemd), otherwise on $NOTIFY_SOCKET.

On SIGTERM it finishes the request in hand and exits; connections that are
waiting stay queued on the socket for the next generation.
"""
import http.server
import os
import signal
import socket
import sys

if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
    sys.exit("server.py: start me with `fdpass fetch SOCKET NAME -- python3 server.py`")

listener = socket.socket(fileno=3)
# Generations share the socket: one that loses a race to accept must not
# sit in accept() after it was told to stop. With a timeout (not
# non-blocking, which makes handle_request poll without waiting, a busy
# loop), waiting for a connection and accepting it each give up after
# server.timeout, and the loop looks at `stopping` again.
listener.settimeout(0.05)


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(listener.getsockname(), Hello, bind_and_activate=False)
server.socket = listener
server.timeout = 0.05
stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)

# Ready to serve: say so where fdpass adopt --stop-old (or systemd) asks.
# As with sd_notify, a notification that cannot be sent is no reason to stop.
notify = os.environ.get("IO_FDPASS_READY_SOCKET") or os.environ.get("NOTIFY_SOCKET")
if notify:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready:
            ready.sendto(b"READY=1", "\0" + notify[1:] if notify.startswith("@") else notify)
    except OSError:
        pass

while not stopping:
    server.handle_request()
