import { MutationCache, QueryCache, QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { ApiError } from './api/client';
import { queryKeys } from './api/queryKeys';
import { ToastProvider } from './components/Toasts';
import './styles.css';

// Any 401 means the session is gone (expired or revoked): drop to the landing page, which says so.
const onError = (error: unknown) => {
  if (error instanceof ApiError && error.isUnauthorized) {
    queryClient.setQueryData(queryKeys.me, null);
  }
};
const queryClient: QueryClient = new QueryClient({
  queryCache: new QueryCache({ onError }),
  mutationCache: new MutationCache({ onError }),
  defaultOptions: { queries: { refetchOnWindowFocus: false, retry: 1 } },
});

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      <ToastProvider>
        <App />
      </ToastProvider>
    </QueryClientProvider>
  </StrictMode>,
);
