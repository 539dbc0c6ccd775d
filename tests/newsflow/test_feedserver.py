"""The loopback feed server: a directory served like a well-behaved feed host, and scripted routes."""

import httpx

from newsflow.feedserver import FeedServer, Reply


def test_a_directory_is_served_with_feed_types_validators_and_304(tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "a.rss").write_bytes(b"<rss/>")
    (tmp_path / "b.atom").write_bytes(b"<feed/>")
    (tmp_path / "pages" / "story.html").write_bytes(b"<html></html>")
    (tmp_path.parent / "secret.txt").write_text("outside the served directory")
    with FeedServer(tmp_path) as server, httpx.Client(base_url=server.base_url) as client:
        first = client.get("/a.rss")
        assert first.status_code == 200 and first.content == b"<rss/>"
        assert first.headers["content-type"] == "application/rss+xml"
        assert first.headers["etag"] and first.headers["last-modified"]
        again = client.get("/a.rss", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert client.get("/b.atom").headers["content-type"] == "application/atom+xml"
        assert client.get("/pages/story.html").headers["content-type"].startswith("text/html")
        (tmp_path / "a.rss").write_bytes(b"<rss>edited</rss>")  # read per request: edits show at once
        edited = client.get("/a.rss", headers={"If-None-Match": first.headers["etag"]})
        assert edited.status_code == 200 and edited.content == b"<rss>edited</rss>"
        assert client.get("/missing.rss").status_code == 404
        assert client.get("/pages").status_code == 404  # a directory is not a file
        assert client.get("/%2e%2e/secret.txt").status_code == 404
        assert [r.path for r in server.requests][:2] == ["/a.rss", "/a.rss"]


def test_a_route_wins_over_a_file_of_the_same_path(tmp_path):
    (tmp_path / "a.rss").write_bytes(b"<rss/>")
    with FeedServer(tmp_path) as server:
        server.route("/a.rss", Reply(503, b"busy", headers={"Retry-After": "60"}))
        answer = httpx.get(server.url("/a.rss"))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "60"
