"""strategies/engine.py: Flower's simulation engine fed by fedface's loop delivers what Flower's own loop delivers."""
import time

import flwr
from flwr.server.superlink.fleet.vce import vce_api

from strategies import engine


def _echo_rounds(nodes: int, rounds: int) -> tuple[list[int], list[list[tuple[int, int]]]]:
    """A real ``run_simulation`` of ``nodes`` trivial ClientApps, each sent one message a round and answering with the
    round it was sent; the node ids and, per round, the (replying node, round) pairs the server got."""
    from flwr.app import Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    client, server, ids, seen = ClientApp(), ServerApp(), [], []

    @client.train()
    def echo(msg, context):
        return Message(content=RecordDict({"m": MetricRecord({"round": msg.content["m"]["round"]})}), reply_to=msg)

    @server.main()
    def main(grid, context):
        while len(grid.get_node_ids()) < nodes:  # the engine registers its nodes in its own thread
            time.sleep(0.05)
        ids.extend(sorted(grid.get_node_ids()))
        for rnd in range(rounds):
            msgs = [Message(content=RecordDict({"m": MetricRecord({"round": rnd})}), dst_node_id=n,
                            message_type=MessageType.TRAIN) for n in ids]
            replies = grid.send_and_receive(msgs, timeout=120)
            seen.append(sorted((r.metadata.src_node_id, int(r.content["m"]["round"])) for r in replies))

    run_simulation(server_app=server, client_app=client, num_supernodes=nodes, backend_config={
        "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "logging_level": "ERROR", "log_to_driver": False}})
    return ids, seen


def test_fed_engine_delivers_each_message_once_to_its_node(monkeypatch):
    """Under ``fast_engine`` every node gets its one message of every round and answers it (a message lost,
    duplicated or sent to the wrong node fails the comparison), fedface's loop is the one that ran, and Flower's own
    loop is back afterwards."""
    asked = []
    monkeypatch.setattr(engine, "waiting_nodes", lambda *a: asked.append(1) or engine_waiting(*a))
    with engine.fast_engine() as fast:
        ids, seen = _echo_rounds(nodes=6, rounds=2)
    assert fast and asked, "fedface's feed did not run"
    assert len(ids) == 6 and seen == [[(n, rnd) for n in ids] for rnd in range(2)]
    assert vce_api.add_messages_to_queue is engine._FLOWER_FEED


engine_waiting = engine.waiting_nodes


def test_another_flower_keeps_its_own_engine_loop(monkeypatch, caplog):
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    with engine.fast_engine() as fast:
        assert vce_api.add_messages_to_queue is engine._FLOWER_FEED
    assert not fast and "found 1.43.0" in caplog.text
