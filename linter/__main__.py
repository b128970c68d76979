from modelcheck.cli.main import main

main()
