"""The delivery room: how a message gets into local mailboxes, from any front end.

- `service.DeliveryService`: the one entry for deliveries (SMTP MX, the relay's DSNs,
  the connectors' re-deliveries); batches them on one thread (`pipeline`) and hands
  them to the store's group committer, one write path (`mssmail.store.delivery`).
- `submission.submit`: sending from any front end (SMTP submission, webmail).
- `filters`: what crypto plugs in (sign/encrypt on submission, verify on delivery).

Nothing here writes SQL: the rows are the store's (`mssmail/store/`). `filters` imports
nothing else, so an SMTP worker process can use `filters.Reject` without the store.
"""
