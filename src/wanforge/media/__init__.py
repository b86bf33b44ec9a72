"""wanforge.media: storage, safe URL fetching, safe image decoding.

One job per module; import the one you need (this package imports nothing itself, so importing
``wanforge.media.storage`` does not pull in httpx or Pillow):

- ``errors``: :class:`MediaError` (API error code 1402) and its subclasses;
- ``keys``: storage key validation and generation;
- ``storage``: the :class:`Storage` protocol and :class:`LocalStorage`;
- ``datauri``: ``data:`` URIs;
- ``addresses``: which IP addresses a fetch may reach, host resolution;
- ``fetch``: :func:`fetch_url`, SSRF-safe HTTP(S) download;
- ``images``: :func:`decode_image`, safe decoding to RGB;
- ``resolve``: :func:`read_media`, a request's media reference to bytes.
"""
