from streamproc.cli.app import main

main()
