from services.encode.main import main

main()
