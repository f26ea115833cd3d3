from services.diffusion.main import main

main()
