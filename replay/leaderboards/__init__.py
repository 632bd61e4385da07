"""Leaderboards: read models projected from the event stream (docs/leaderboards.md).

The pure core (board, definitions, metrics, periods, rating) does no I/O; the
projection (:mod:`replay.leaderboards.projection`) feeds it from the store and
persists it with its checkpoint in one transaction.
"""
