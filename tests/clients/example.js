// The Node.js example of the docs, unchanged but for the base URL (replaced by the test),
// followed by a driver that calls it.
const fetch = require('node-fetch');
async function generateChatToken(userId, expiresIn = '24h') {
try {
const response = await fetch('https://api.performchat.com/rest/v1/auth/token', {
method: 'POST',
headers: {
'Content-Type': 'application/json',
},
body: JSON.stringify({
keyId: process.env.PERFORMCHAT_KEY_ID,
keySecret: process.env.PERFORMCHAT_KEY_SECRET,
userId: userId,
agentId: 'your-agent-id',
expiresIn: expiresIn // Optional - defaults to '24h'
})
});
if (!response.ok) {
throw new Error(`HTTP error! status: ${response.status}`);
}
const data = await response.json();
// ⚠️ IMPORTANT: Store user.id for token invalidation
return {
token: data.token,
userId: data.user.id, // Save this in your database!
externalId: data.user.externalId
};
} catch (error) {
console.error('Error generating token:', error);
throw error;
}
}

// Driver: Express apps pass req.user.id, often a number.
(async () => {
  const byString = await generateChatToken('user_123');
  const byNumber = await generateChatToken(42, '7d');
  console.log(JSON.stringify({ byString, byNumber }));
})().catch(() => process.exit(1));
