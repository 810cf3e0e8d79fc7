"""The loop that carries out what the call path asks for, shared by the runtime and the
unit-test rig, so the tests exercise the same order of events and commands as the node.

After each input (a datagram, a timer, a verdict, an rtpengine reply) the transaction
layer's events go to the controller, and the controller's commands go to their executors:
state-store commands to ``state`` (which may decide at once, as the memory store does, or
later, as Redis does, through ``CallController.on_acquired``), rtpengine commands to
``media`` and webhooks to ``notify`` (both answer later). Until nothing is left to do.
"""

from __future__ import annotations

from collections.abc import Callable

from media.ng import MediaCommand
from sbc.call.controller import CallController
from sbc.sip.transaction import TransactionLayer
from sbc.state import Acquire, Bind, Credit, Denied, Notify, StateCommand

State = Callable[[StateCommand, float], tuple[bool, Denied | None]]  # (decided now?, verdict)


class Executor:
    def __init__(
        self,
        layer: TransactionLayer,
        controller: CallController,
        state: State,
        media: Callable[[MediaCommand], None],
        notify: Callable[[Notify], None],
    ) -> None:
        self.layer = layer
        self.controller = controller
        self.state = state
        self.media = media
        self.notify = notify

    def pump(self, now: float) -> None:
        ctrl = self.controller
        while True:
            events = self.layer.pop_events()
            if events:
                ctrl.process(events)
            if not ctrl.commands:
                return
            for cmd in ctrl.pop_commands():
                if isinstance(cmd, Notify):
                    self.notify(cmd)
                elif isinstance(cmd, MediaCommand):
                    self.media(cmd)
                else:
                    decided, denied = self.state(cmd, now)
                    if decided and isinstance(cmd, (Acquire, Credit)):
                        ctrl.on_acquired(cmd.token, denied, now)
                    elif decided and isinstance(cmd, Bind) and cmd.token:
                        ctrl.on_bound(cmd.token, now)
