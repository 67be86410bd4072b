"""The AWS deployment emulated on one machine: API Gateway routing, the uvicorn server, an S3 emulator, pid files."""
