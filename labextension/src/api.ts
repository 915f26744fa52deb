// The one way the frontend talks to the burstlab server extension: plain HTTP to {base_url}burstlab/api/.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An error answer from the burstlab REST API (or no answer), carrying the server's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason = ''
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * Call `{base_url}burstlab/api/{path}` with the lab's own auth (token / XSRF) and return the parsed JSON.
 *
 * Any 4xx/5xx becomes an ApiError whose message is the server's `message` field (docs/api.md: every error body
 * is `{"message", "reason"}`), so callers can show it as it is.
 */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const [route, query] = path.split('?', 2);
  let url = URLExt.join(settings.baseUrl, 'burstlab', 'api', route);
  if (query) {
    url += `?${query}`;
  }
  const method = (init.method ?? 'GET').toUpperCase();
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(0, `burstlab: ${method} ${route} got no answer from the Jupyter server (${error}). Is it still running?`);
  }
  const text = await response.text();
  let body: any = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    let message: string = body && typeof body.message === 'string' && body.message ? body.message : '';
    if (!message) {
      message =
        response.status === 404 && !body
          ? `burstlab: ${method} ${route} is not served here (404). Is the burstlab server extension enabled? ` +
            '`jupyter server extension list` should show burstlab.jupyter_ext; `pip install burstlab` and restart the server.'
          : `burstlab: ${method} ${route} failed with ${response.status} ${response.statusText}`.trim();
    }
    throw new ApiError(response.status, message, body && typeof body.reason === 'string' ? body.reason : '');
  }
  return body as T;
}

/** The message to show for any thrown value. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}
