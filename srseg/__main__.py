from srseg.cli import main

raise SystemExit(main())
