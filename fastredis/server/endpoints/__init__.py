"""The server's faces: websocket push and pull, REST, GraphQL, MJPEG and the browser pages
(their assets in ``pages/``), plus the websocket plumbing push and pull share. Each turns a
request into reads (`fastredis.server.reads`) or writes (`fastredis.server.writes`)."""
