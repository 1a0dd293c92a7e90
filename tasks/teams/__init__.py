"""Teams: who sent a message (the queue it arrived on), what is theirs in Redis, what they may push.

A team is declared by the operator (``dockyard.config.teams``) and verified by
Redis: its user may push only to its own queues (``<queue>@<team>``), so the
queue a worker took a message from names its sender. The worker's transport
records that queue on each message (``transport``), a task reads its team from
there (``identity``), results and private keys live under the team's name
(``results``, ``keys``), and pushes are held to the team's repositories and
images (``pushing``) and recorded (``audit``).
"""
