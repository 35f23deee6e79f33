# The Python (FastAPI) example of the docs, unchanged but for the base URL (replaced by the
# test); its route needs the application's own get_current_user, so the driver below calls
# the helper directly.
import os
import httpx
from fastapi import FastAPI, HTTPException, Depends
app = FastAPI()
PERFORMCHAT_API_URL = "https://api.performchat.com/rest/v1/auth/token"
async def generate_chat_token(user_id: str, agent_id: str = None) -> str:
    async with httpx.AsyncClient() as client:
        payload = {
            "keyId": os.getenv("PERFORMCHAT_KEY_ID"),
            "keySecret": os.getenv("PERFORMCHAT_KEY_SECRET"),
            "userId": user_id,
        }
        if agent_id:
            payload["agentId"] = agent_id
        response = await client.post(PERFORMCHAT_API_URL, json=payload)
        if response.status_code != 200:
            raise HTTPException(status_code=500, detail="Failed to generate token")
        return response.json()["token"]

# Driver.
import asyncio
import json
print(json.dumps({
    "withoutAgent": asyncio.run(generate_chat_token("user_123")),
    "withAgent": asyncio.run(generate_chat_token("user_123", "your-agent-id")),
}))
