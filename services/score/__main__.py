from services.score.main import main

main()
