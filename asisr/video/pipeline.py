"""Decode, upscale and encode at once: three stages joined by bounded queues.

Decoding (with the colour conversion) runs in one thread, encoding (with the conversion back
and the muxing) in another, and the upscaling in the calling thread, so Ctrl-C lands where the
work is and the model's backend (which releases the GIL, as FFmpeg does) overlaps with both.
The queues hold at most ``depth`` items each, so memory is bounded: about ``depth`` decoded
frames plus ``depth`` upscaled ones besides what the upscaler's own budget allows.

Items flow in order: a stage never reorders, so packets that are copied (audio, subtitles)
travel in the same queues as the frames beside them and reach the muxer in input order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_DEPTH = 3
_POLL_S = 0.1
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class _Channel:
    """A bounded queue whose ``put`` / ``get`` give up when the run is stopped (never block forever)."""

    def __init__(self, depth: int, stop: threading.Event):
        self.items: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = stop

    def put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        while True:
            try:
                return self.items.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stop.is_set():
                    return _DONE


def run_stages(source: Iterable[Any], transform: Callable[[Any], Any], sink: Callable[[Any], None],
               finish: Callable[[], None], depth: int = DEFAULT_DEPTH) -> None:
    """``sink(transform(item))`` for every item of ``source`` in order, then ``finish()`` (in the sink's thread).

    ``source`` is iterated in a reader thread, ``sink`` and ``finish`` run in a writer thread,
    ``transform`` here. The first exception of any stage (or a KeyboardInterrupt here) stops all
    three and is raised here, after both threads have ended.
    """
    stop = threading.Event()
    decoded, upscaled = _Channel(depth, stop), _Channel(depth, stop)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for item in source:
                if not decoded.put(item):
                    return
            decoded.put(_DONE)
        except BaseException as e:  # handed to the calling thread
            decoded.put(_Failed(e))

    def write() -> None:
        try:
            while True:
                item = upscaled.get()
                if item is _DONE:
                    break
                sink(item)
            if not stop.is_set():
                finish()
        except BaseException as e:
            errors.append(e)
            stop.set()

    reader = threading.Thread(target=read, name="asisr-video-decode", daemon=True)
    writer = threading.Thread(target=write, name="asisr-video-encode", daemon=True)
    reader.start()
    writer.start()
    try:
        while not errors:
            item = decoded.get()
            if item is _DONE:
                break
            if isinstance(item, _Failed):
                raise item.error
            if not upscaled.put(transform(item)):
                break
        if not errors:
            upscaled.put(_DONE)
            _join(writer, stop, errors)
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        reader.join()
        writer.join()
    if errors:
        raise errors[0]


def _join(writer: threading.Thread, stop: threading.Event, errors: list[BaseException]) -> None:
    """Wait for the writer to drain (in short waits, so Ctrl-C still lands here)."""
    while writer.is_alive():
        writer.join(timeout=_POLL_S)
        if errors:
            return
