"""One thread that owns a transformers engine's refill decoder and serves several callers at once: each call's
requests join the same queue, so a Ray Data actor can hold several batches in flight (``max_concurrent_batches``)
and its rows stay full across batch boundaries, the way ray.data.llm keeps a vLLM replica full.

A failing forward fails every call in flight (the decoder cannot tell which row broke a shared decode); their
callers isolate the poison document by bisecting, as with a synchronous engine.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import replace

from tpt.generation.refill import Decoded, RefillDecoder, Request


class DecodeLoop:
    def __init__(self, decoder: RefillDecoder, rows: int, threads: int | None = None):
        self.decoder, self.rows, self.threads = decoder, rows, threads
        self._inbox: queue.SimpleQueue[tuple[list[Request], Future]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="tpt-decode-loop", daemon=True)
        self._thread.start()

    def submit(self, requests: list[Request]) -> Future[list[Decoded]]:
        """The requests' continuations, in order, once the last of them finishes."""
        future: Future[list[Decoded]] = Future()
        self._inbox.put((requests, future))
        return future

    def _serve(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        calls: dict[int, tuple[Future, list[Decoded | None]]] = {}
        next_id = 0
        with torch.inference_mode():
            while True:
                for requests, future in self._take(block=self.decoder.idle):
                    calls[next_id] = (future, [None] * len(requests))
                    self.decoder.add([replace(r, tag=(next_id, i)) for i, r in enumerate(requests)])
                    next_id += 1
                if self.decoder.idle:
                    continue
                try:
                    finished = self.decoder.step(self.rows)
                except Exception as exc:  # noqa: BLE001 - handed to every caller in flight
                    self.decoder.clear()
                    for future, _ in calls.values():
                        future.set_exception(exc)
                    calls.clear()
                    continue
                for request, decoded in finished:
                    call, index = request.tag
                    future, results = calls[call]
                    results[index] = decoded
                    if all(r is not None for r in results):
                        future.set_result(results)
                        del calls[call]

    def _take(self, block: bool) -> list[tuple[list[Request], Future]]:
        taken = [self._inbox.get()] if block else []
        while True:
            try:
                taken.append(self._inbox.get_nowait())
            except queue.Empty:
                return taken
