"""The Location service: live driver positions, presence, history and order tracking.

Being built (issue 5): the pure parts come first — ``fixes`` (validation, ordering,
throttling) and ``policy`` (the reporting interval the ack tells the app).
"""
