"""User study: blind two-alternative forced-choice comparison of SR outputs.

The paper's claim (semantics make textures look more real) is a perceptual one, so it is tested
with people. The pieces, one module each, importable without side effects:

- :mod:`srseg.study.bundle`  build a self-contained, checksummed study bundle from SR outputs
- :mod:`srseg.study.store`   SQLite (WAL) state next to the bundle: raters, hashed tokens, votes
- :mod:`srseg.study.app`     the web app raters use (Flask factory, security headers, gunicorn server)
- :mod:`srseg.study.views`   its rater blueprint (start, pairs, votes, comment, images)
- :mod:`srseg.study.admin`   its admin blueprint (login, progress)
- :mod:`srseg.study.access`  sessions, CSRF, admin credentials, wrong-token rate limit
- :mod:`srseg.study.analyze` win rates, Bradley-Terry scores, agreement, report, metrics.json
- :mod:`srseg.study.crowd`   CSV export of pairs / CSV import of crowd votes
"""
