import { SkeletonCard } from './components/Skeleton';
import { Landing } from './features/auth/Landing';
import { useMe } from './features/auth/useMe';
import { useSignOut } from './features/auth/useSignOut';
import { Dashboard } from './features/nodes/Dashboard';

export function App() {
  const me = useMe();
  const signOut = useSignOut();
  const address = me.data?.address;
  return (
    <>
      <header className="topbar">
        <a className="brand" href="/">
          Erigolem
        </a>
        {address && (
          <div className="account">
            <code title={address} data-testid="account">
              {address.slice(0, 6)}…{address.slice(-4)}
            </code>
            <button type="button" className="button" onClick={() => signOut.mutate()}>
              Sign out
            </button>
          </div>
        )}
      </header>
      {me.isLoading ? (
        <main className="dashboard" aria-busy="true">
          <SkeletonCard />
        </main>
      ) : address ? (
        <Dashboard />
      ) : (
        <Landing />
      )}
    </>
  );
}
