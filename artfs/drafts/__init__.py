"""Drafts: writable trees on local disk that become versions on commit (SPEC §2 Publishing).

``store.DraftStore`` keeps drafts durable and answers every file operation inside
them; ``cow.ensure_local`` brings an inherited file's bytes from the blob cache
before its first change; ``commit.commit_draft`` publishes a draft; ``requests``
is the small file protocol between ``artfs commit`` and the mount daemon.
See docs/design-drafts.md.
"""
