"""The boto3 side: target resolution and the Session Manager API calls (DESIGN.md)."""
