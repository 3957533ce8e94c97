"""OTP supervision as pure state machines: events in, actions out.

Nothing in this package touches sockets, processes or the clock; the node
feeds it events stamped with `now` and carries out the actions it returns.
"""
