"""``pixelflow dlq list|redrive``: see and replay messages that ended in the dead-letter queue."""

from __future__ import annotations

import argparse

from pixelflow.commands._common import EXIT_OK, add_json_flag, emit


def _urls(sqs, settings) -> tuple[str, str]:
    queue = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    return queue, dlq


def run_list(args: argparse.Namespace) -> int:
    from pixelflow.aws import sqs_client
    from pixelflow.ops.dlq import list_dead_letters
    from pixelflow.settings import PixelFlowSettings

    sqs = sqs_client()
    _, dlq = _urls(sqs, PixelFlowSettings())
    letters = list_dead_letters(sqs, dlq, args.limit)
    lines = []
    for letter in letters:
        what = ", ".join(f"s3://{o['bucket']}/{o['key']}" for o in letter.objects) or repr(letter.body_preview[:60])
        lines.append(f"{letter.message_id}  received {letter.receive_count}x  {what}  ({letter.reason})")
    emit(args, [letter.__dict__ for letter in letters], "\n".join(lines) or "the dead-letter queue is empty")
    return EXIT_OK


def run_redrive(args: argparse.Namespace) -> int:
    from pixelflow.aws import sqs_client
    from pixelflow.ops.dlq import redrive
    from pixelflow.settings import PixelFlowSettings

    sqs = sqs_client()
    queue, dlq = _urls(sqs, PixelFlowSettings())
    moved = redrive(sqs, dlq, queue, args.limit)
    emit(args, {"moved": moved}, f"moved {moved} message(s) back to the upload queue")
    return EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser("dlq", help="inspect and redrive the dead-letter queue",
                                   description="Messages the bridge could not deliver end in the dead-letter queue "
                                               "after PIXELFLOW_MAX_RECEIVE_COUNT receives.")
    commands = parser.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="show the messages, decoded (bucket, key, reason)")
    listing.add_argument("--limit", type=int, default=100)
    add_json_flag(listing)
    listing.set_defaults(func=run_list)
    again = commands.add_parser("redrive", help="move the messages back to the upload queue")
    again.add_argument("--limit", type=int, default=None, help="at most this many messages")
    add_json_flag(again)
    again.set_defaults(func=run_redrive)
