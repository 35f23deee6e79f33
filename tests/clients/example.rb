# The Ruby (Rails) example of the docs, unchanged but for the base URL (replaced by the test)
# and `use_ssl:`, which follows the URL's scheme here: the test server speaks plain HTTP on
# loopback (in production, TLS is terminated in front of performchat).
require 'net/http'
require 'json'
class ChatTokenService
PERFORMCHAT_API_URL = 'https://api.performchat.com/rest/v1/auth/token'
def self.generate_token(user_id, agent_id = nil)
uri = URI(PERFORMCHAT_API_URL)
request = Net::HTTP::Post.new(uri)
request['Content-Type'] = 'application/json'
request.body = {
keyId: ENV['PERFORMCHAT_KEY_ID'],
keySecret: ENV['PERFORMCHAT_KEY_SECRET'],
userId: user_id,
agentId: agent_id
}.compact.to_json
response = Net::HTTP.start(uri.hostname, uri.port, use_ssl: uri.scheme == 'https') do |http|
http.request(request)
end
if response.is_a?(Net::HTTPSuccess)
JSON.parse(response.body)['token']
else
raise "Failed to generate token: #{response.code}"
end
end
end

# Driver.
puts({ withoutAgent: ChatTokenService.generate_token('user_123'),
       withAgent: ChatTokenService.generate_token('user_123', 'your-agent-id') }.to_json)
