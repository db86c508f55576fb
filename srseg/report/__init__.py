"""The science report (``srseg report``): ``build`` assembles it from the stages' outputs,
``document`` renders Markdown and HTML from the same blocks, ``plots`` draws its figures."""
