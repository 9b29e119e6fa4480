from foodmesh.cli import main

raise SystemExit(main())
