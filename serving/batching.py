"""Dynamic batching: one bounded asyncio queue per model, one worker thread per model.

Requests ``submit`` an input and await its result. A collector task takes the first waiting input, then
keeps collecting until ``max_batch_size`` inputs or ``max_wait_ms`` after the first, and calls the
model function once on the whole batch in the model's own worker thread (off the event loop, one call at
a time per model). Under load the queue fills while a batch computes, so the next batch is larger: heavy
load raises throughput instead of queueing single items (Ray Serve's ``@serve.batch``, Triton's dynamic
batcher). A full queue refuses at once with ``Overloaded`` (503 + Retry-After): no unbounded backlog.

The model function maps a list of inputs to a list of results, one per input, in order; an exception
fails every request of that batch (the pipeline's stage code already isolates per-item failures).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .errors import Overloaded


class DynamicBatcher:
    def __init__(self, name: str, fn: Callable[[list], list], max_batch_size: int, max_wait_ms: float,
                 max_queue: int, on_batch: Callable[[str, int, float], None] | None = None):
        self.name, self.fn = name, fn
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch  # (model name, batch size, seconds) after every model call
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    async def submit(self, value: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((value, future))
        except asyncio.QueueFull:
            raise Overloaded(f"the {self.name} model's queue is full ({self.queue.maxsize} waiting); retry later") from None
        return await future

    async def _next_batch(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return [(value, future) for value, future in batch if not future.done()]  # drop cancelled requests

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = loop.time()
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [value for value, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for a batch of {len(batch)}")
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                if self.on_batch:
                    self.on_batch(self.name, len(batch), loop.time() - started)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        while not self.queue.empty():
            _, future = self.queue.get_nowait()
            future.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
