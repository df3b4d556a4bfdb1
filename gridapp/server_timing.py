"""The `Server-Timing` response header: how long the app itself took to answer (`app;dur=<ms>`).

The time runs from the WSGI server handing the request to the app until the app returns, so it holds
Flask's dispatch, authentication, the view and the teardown that ends the database transaction, and not
the server's reading of the request or its writing of the response (nor the body of a streamed response,
which is produced after the app returns). It lets clients and bench/grid_queries.py measure the server's
own latency without the network.
"""
import time


class ServerTiming:
    """WSGI middleware that adds `Server-Timing: app;dur=<ms>` to every response.

    A WSGI server sends the headers only with the first chunk of the body (PEP 3333), after the app has
    returned; so the middleware holds back the app's start_response call until then and adds the header
    with the whole time, teardown included.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        held = []

        def hold(status, headers, exc_info=None):
            held[:] = [status, headers, exc_info]
            return _no_write

        body = self.wsgi_app(environ, hold)
        status, headers, exc_info = held
        headers.append(("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.3f}"))
        start_response(status, headers, exc_info)
        return body


def _no_write(data):
    raise RuntimeError("the legacy WSGI write() callable is not supported behind ServerTiming")
