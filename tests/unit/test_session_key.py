"""Key-less affinity: a chat's session id is a hash of its first messages, the same on every later turn."""

from __future__ import annotations

from services.frontend.openai_types import ChatMessage
from shared.routing.session_key import prefix_session


def test_every_turn_of_a_conversation_has_the_session_of_its_first_messages():
    sys_ = ChatMessage(role="system", content="be brief")
    turn1 = [sys_, ChatMessage(role="user", content="hello")]
    turn3 = [*turn1, ChatMessage(role="assistant", content="hi"), ChatMessage(role="user", content="more"),
             ChatMessage(role="assistant", content="ok"), ChatMessage(role="user", content="again")]
    other = [sys_, ChatMessage(role="user", content="a different chat")]
    s = prefix_session(turn1, "prefix")
    assert s is not None and s == prefix_session(turn3, "prefix")
    assert prefix_session(other, "prefix") != s  # the same system prompt alone does not join two chats
    assert prefix_session([{"role": "user", "content": "x"}], "prefix") == prefix_session(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "prefix")


def test_off_unless_asked_and_nothing_without_a_user_message():
    msgs = [ChatMessage(role="user", content="hello")]
    assert prefix_session(msgs, "header") is None
    assert prefix_session([ChatMessage(role="system", content="s")], "prefix") is None
    assert prefix_session(None, "prefix") is None
