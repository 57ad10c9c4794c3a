"""The composition root: one WSGI application and the processes that serve it.

`app` mounts every door's routes on one `Services` object and answers what no door
handled in that door's shape (`answers`); `auditing` opens and writes each request's audit
record; `serve` runs gunicorn (`worker` with its admission control and body `limits`) and
the server's one `background` process (notification sender, PDF text indexer), which picks
each door's notification renderer. Nothing below imports this package.
"""
