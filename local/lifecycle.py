"""One way for the local servers and emulators to be used in a `with` block."""

from typing import Any, Self


class Startable:
    """`with Thing() as thing:` starts it and stops it on the way out, whatever happened inside."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
