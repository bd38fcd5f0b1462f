"""``Stores``: the node's durable state in one value - trust, sequence numbers, replay.

``Stores.file(data_dir)`` is what a real node uses (``trusted_peers.json``, ``sequence``,
``replay_state.msgpack`` in the data directory); ``Stores.memory()`` keeps everything in
memory (simulations, unit tests). Pass the same ``Stores`` to a restarted simulated node
to keep its state across the restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stack.store.replay import FileReplayStore, MemoryReplayStore, ReplayStore
from stack.store.sequence import DEFAULT_BLOCK, FileSequence, MemorySequence, SequenceStore
from stack.store.trust_storage import FileTrustStorage, MemoryTrustStorage, TrustStorage

__all__ = ["Stores"]


@dataclass(frozen=True)
class Stores:
    """Attributes:
        trust: where the trust store's records live (``TrustStorage``).
        sequence: our announcement sequence numbers (``SequenceStore``).
        replay: the announcement verifier's replay state (``ReplayStore``).
    """

    trust: TrustStorage
    sequence: SequenceStore
    replay: ReplayStore

    @classmethod
    def file(cls, data_dir: Path, *, sequence_block: int = DEFAULT_BLOCK) -> Stores:
        data_dir = Path(data_dir)
        return cls(FileTrustStorage(data_dir), FileSequence(data_dir, block=sequence_block),
                   FileReplayStore(data_dir))

    @classmethod
    def memory(cls) -> Stores:
        return cls(MemoryTrustStorage(), MemorySequence(), MemoryReplayStore())
